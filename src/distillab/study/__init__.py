"""`distillab study`: a sweep of real runs, the scaling laws fitted on them, and the report."""
