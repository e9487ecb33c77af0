"""The network-agnostic core: appservice intake, users, logins, ghosts, portals, commands."""
