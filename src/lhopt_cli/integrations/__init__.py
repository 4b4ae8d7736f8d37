"""The public import path of the framework callbacks (`lhopt_cli.integrations.lightning`,
`lhopt_cli.integrations.hf`); they live with the rest of the loop library in loop/integrations/."""
