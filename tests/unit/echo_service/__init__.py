"""A sixth, trivial service, added the way a new ragtune service is: one declaration (here in
``declaration.py``; in ragtune, an entry of ``ragtune.common.services``) plus its folder
(config, service, app). tests/unit/test_services.py deploys it beside the real ones."""
