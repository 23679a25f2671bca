"""The `ntkit` command-line application: `ntkit demo` (and later commands), built on the public library."""

from ._main import main as main
