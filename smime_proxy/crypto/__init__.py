"""Hazmat layer: CMS structures (asn1crypto behind an adapter) and primitives (cryptography).

May import: errors, model, cryptography, asn1crypto. Nothing above it.
"""
