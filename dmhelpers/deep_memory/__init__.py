"""Deep Memory: the query adapter, its training and the choice of where it acts, and jobs and models
(``db.deep_memory``)."""
