"""The one error type for user mistakes, and a parser that says them, so every entry point prints a single line."""
import argparse


class ConfigError(ValueError):
    """A bad configuration value; the message names the value and what is allowed."""


class OneLineParser(argparse.ArgumentParser):
    """argparse prints its usage before a mistake; every entry point here says it in one line instead."""

    def error(self, message):
        self.exit(2, "error: {}: {} (see {} --help)\n".format(self.prog, message, self.prog))
