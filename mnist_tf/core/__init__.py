"""What every layer may use: errors (`errors`), atomic files (`files`), the exported models' tensor
contract (`contract`), the run dir's layout (`rundir`), shared types (`types`) and quiet commands (`quiet`).
Nothing here imports TensorFlow."""
