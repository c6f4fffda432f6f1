import sys

from salun.cli import main

sys.exit(main())
