"""The compliance evidence pack: what keyfab holds for a product, mapped to CRA Annex I
and IEC 62443-4-2, written as HTML, PDF and JSON with keyfab's SBOM, and signed.

``build.write_pack`` writes one; ``pack.verify_pack`` checks one. It stands on
``authority`` (the pack's signer is certified and recorded there) and reads
through ``registry.queries``; the CLI is its only caller.
"""
