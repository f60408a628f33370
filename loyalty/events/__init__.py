"""What the programme tells the outside world: the outbox of events, signed webhooks to the
storefront's tools, and lifecycle triggers."""
