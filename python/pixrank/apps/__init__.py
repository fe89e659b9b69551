"""Applications on top of the library: command-line sub-commands and the web UI."""
