"""Lightweight CMP (RFC 9483): messages, protection, transactions and the responder.

It stands on ``authority`` (enrolment, revocation, the responder's
credential) the way ``provision`` does; ``server/cmp.py`` carries it over
HTTP (RFC 6712) and ``cli/cmp.py`` makes and approves one-time secrets.
"""
