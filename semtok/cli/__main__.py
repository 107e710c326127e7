import sys

from semtok.cli.main import entry

sys.exit(entry())
