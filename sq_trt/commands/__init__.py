"""One module per ``sq-trt`` subcommand (see :mod:`sq_trt.cli`)."""
