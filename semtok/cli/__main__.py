import sys

from semtok.cli.main import main

sys.exit(main())
