"""`make bench`: throughput figures, each printed as a ratio against a baseline measured in the same run.

Absolute numbers drift by 2x between runs on shared machines; ratios measured back to back do not.
"""
