"""Command line, configuration and orchestration of the harvest -> store -> fit -> evaluate pipeline."""
