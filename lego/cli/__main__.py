import sys

from lego.cli import main

sys.exit(main())
