"""Adapters to the outside: WeChat, session store, ISBN catalog, event-log export."""
