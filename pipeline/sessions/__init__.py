"""Derived abandonment: sessions of the clickstream, their expiry, and the signals
cart and browse abandonment that the absence of an order or an add-to-cart means.

Pure: no Kafka client, no HTTP client. The consumer feeds mapped signals in, takes
derived signals and changelog records out, and decides when a partition is quiet.

    session.py    what a session has seen (facts, order-independent)
    derive.py     a closed session -> cartAbandonment / browseAbandonment records,
                  validated and mapped through the catalog like any event
    clock.py      a partition's event-time watermark, advanced by the wall clock when quiet
    store.py      one partition's open sessions: expiry, grace, late events, the cap
    changelog.py  sessions as bytes for a compacted changelog topic, and back
    offline.py    the same from a JSON Lines file (``connect-pipeline check --derive``)
"""
