"""The email connector: IMAP in, SMTP out, one Matrix room per set of correspondents.

The connector class is `bridge.connectors.email.connector.EmailConnector`; this package's
__init__ stays light so the mail parser's worker processes import only what they need.
"""
