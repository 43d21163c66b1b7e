"""Mail at rest (issue 11): what a stored message becomes when it is kept encrypted or
decrypted (`forms`), and replacing stored messages over IMAP, resumably (`convert`),
and the IMAP keywords of both (`keywords`).

May import: nothing.
"""
