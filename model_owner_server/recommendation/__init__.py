"""The served recommendation: which (alpha, beta) a data owner should request for a wanted privacy gap,
read off a measured privacy-utility frontier (`frontier_file.FrontierFile`, written by `scaleot-bench
frontier`, loaded by the service from SCALEOT_FRONTIERS) by one rule (`rule.py`)."""
