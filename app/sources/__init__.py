"""Where customer data comes from: turning what Shopify, a Meta pixel/CAPI gateway and a GTM server
container send into Herald's one vocabulary of events, identities and consent (SPEC §3, §6)."""
