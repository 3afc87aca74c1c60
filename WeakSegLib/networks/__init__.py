"""Networks: nnU-Net-style planning from the data and the DynUNet that the plan builds."""
