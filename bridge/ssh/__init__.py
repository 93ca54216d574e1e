"""The SSH bridge: jobs run on a remote host reached over SSH (``pairio-bridge ssh``).

``options`` (the ``ssh`` section of bridge.json) imports no paramiko; ``connection`` is the
only module that does; ``backend`` runs jobs through the shell seam; ``cli`` is the command.
"""
