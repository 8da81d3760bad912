"""`pipeline report`: the paper's Table 1, ablations and group analysis from evaluated runs, beside the paper's
own figures, as Markdown, JSON and PNG plots."""
