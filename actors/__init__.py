"""Ray actors hosting generation engines. Thin wrappers: the logic they run lives in `engine`."""
