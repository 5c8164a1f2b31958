import sys

from qtclient.app import main

sys.exit(main())
