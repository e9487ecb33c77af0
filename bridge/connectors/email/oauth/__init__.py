"""OAuth 2.0 sign-in to mailboxes: providers, sign-in links, tokens, the callback page."""
