import sys

from anyseg.cli import main

sys.exit(main())
