"""The backends: base.py is the contract (`Finetune`: options -> Plan, pure hooks); one package per backend
(llamafactory/, alpacalora/, flagembedding/, collie/, auto/) and dummy.py. `lazytune.finetune` is the registry."""
