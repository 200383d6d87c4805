"""``python -m mmvq.cli`` runs the ``mmvq`` command line."""

from mmvq.cli import main

raise SystemExit(main())
