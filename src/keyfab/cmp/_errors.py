"""The one CMP refusal, apart from the ASN.1 code so the CLI needs no pyasn1."""

from __future__ import annotations


class CmpError(Exception):
    """A request refused with a PKIFailureInfo bit (RFC 4210 §5.2.3) and a safe text."""

    def __init__(self, failure: str, text: str):
        super().__init__(text)
        self.failure = failure  # a PKIFailureInfo name: badRequest, badMessageCheck, ...
