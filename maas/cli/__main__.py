"""``python -m maas.cli``: the ``maas`` command."""

from maas.cli import main

raise SystemExit(main())
