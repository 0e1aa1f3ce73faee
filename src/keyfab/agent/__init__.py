"""``keyfab agent``: the device API served on a local Unix socket, and its duties.

One job per module: ``protocol`` (framing), ``peer`` (SO_PEERCRED),
``policy`` (who may call what; the ``[agent]``/``[tamper]``/``[boot]``
config sections), ``calls`` (the call table over ``keyfab.device.DeviceApi``),
``server`` (the socket loop), ``client`` (the library side), ``state``
(persisted tamper and lifecycle state), ``tamper`` (sensors), ``manifest``
(the maker-signed boot manifest), ``http`` (the server's API), ``renewal``
(EST), ``attestation`` (challenges), ``lifecycle`` (the thread that runs those
two), ``status`` (what an operator asks), ``daemon`` (all together, and the
tamper and boot responses).

The agent stands on ``device`` and ``rot`` (and an HTTP client); it never
imports ``authority`` or ``registry`` (``tests/test_layers.py``).
"""
