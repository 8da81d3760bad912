"""One module per command group; importing them registers the commands on the `pipeline` group."""
