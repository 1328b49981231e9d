"""The one-file binary's entry script (chatport.spec): the ``chatport`` command."""
from app.__main__ import main

main()
