"""One pipeline call: which task serves a request, the call's keywords, how a run is guarded, and
the batch invariance that lets merged requests give the images they would give alone."""
