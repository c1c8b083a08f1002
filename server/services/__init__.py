"""Services: small sets of functions the router calls, one file per topic.

None opens a store on its own or decides who may do what: they load records from the
stores in the context, ask ``server.policy``, write, and publish.
"""
