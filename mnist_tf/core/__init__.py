"""What every layer may use: errors (`errors`), atomic files (`files`), the exported models' tensor
contract (`contract`), the run dir's layout (`rundir`) and shared types (`types`). Nothing here imports
TensorFlow."""
