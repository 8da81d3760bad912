"""The stages that consume runs (evaluate/, report/, browse/, experiment.py), the embedded demo (demo.py), and in
cli/ the `pipeline` command line that calls every stage. docs/architecture.md draws the whole."""
