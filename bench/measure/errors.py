"""The one error type for user mistakes, so every entry point can print it as a single line."""


class ConfigError(ValueError):
    """A bad configuration value; the message names the value and what is allowed."""
