"""Store Encrypted: the LMTP filter between the MTA and the mail store (issue 11).

May import: nothing.
"""
