"""Entry point: ``python -m benchmarks [--quick] [--device cpu|cuda] ...`` (`benchmarks.cli`)."""

from .cli import main

raise SystemExit(main())
