"""Ray actors hosting generation engines. Thin wrappers: the logic they run lives in `s2d.engine`."""
