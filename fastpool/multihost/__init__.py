"""Host lists: a primary and its replicas, followed through failovers without a restart.

``fastpool.open("postgresql://app:pw@h1:5432,h2:5432/shop")`` (or ``hosts=[...]``, or any
of the options in ``options.py``) returns a ``MultiHostPool`` (``pool.py``): a pool whose
connections go to the host of its target, with ``db.replicas`` for reads. ``hosts.py``
holds what is known of each host and the threads that keep it current.
"""
