"""Operator tools: the ACLs of each principal, open and hanging transactions."""
