"""Where jobs run: an embedded local Ray by default, or an existing cluster by address."""
