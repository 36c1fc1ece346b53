"""The per-customer rules as plain Python (no pyflink import; a test checks it).

- :mod:`~udfs.core.validation`: one raw Kafka record to a valid event or a dead-letter reason;
- :mod:`~udfs.core.journey`: the customer's profile, cart and abandoned-cart journey as
  ``on_event``/``on_timer`` returning a :class:`~udfs.core.journey.Decision`;
- :mod:`~udfs.core.render`: the email request for a due step (Jinja2, sandboxed);
- :mod:`~udfs.core.customer`: one event or timer end to end behind a firewall, with what it
  emits encoded by :mod:`~udfs.core.contract`;
- :mod:`~udfs.core.instant`: epoch-ms instants as the ISO 8601 text every output carries.

Time comes in as an argument (epoch ms); nothing here reads the clock (:mod:`udfs.clock`).
"""
