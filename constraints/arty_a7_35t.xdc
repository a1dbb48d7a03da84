## bitswarm board top on the Digilent Arty A7-35T (xc7a35ticsg324-1L), for Vivado flows other
## than the Tcl script `bitswarm bitstream --board arty` writes (which uses
## amaranth_boards.arty_a7.ArtyA7_35Platform; these pins are the platform's, checked by
## tests/hw/test_bitstream.py).
##
## Ports of the top: clk100 (100 MHz oscillator, the core clock: no MMCM), rst_n (the red
## RESET button, active low), uart_rx / uart_tx (FTDI FT2232HQ USB-UART: the FPGA's receive
## pin is A9), led0 / led1 (LD4, LD5, active high).

set_property -dict { PACKAGE_PIN E3  IOSTANDARD LVCMOS33 } [get_ports { clk100 }]
create_clock -name clk100 -period 10.000 -waveform {0 5} [get_ports { clk100 }]

set_property -dict { PACKAGE_PIN C2  IOSTANDARD LVCMOS33 } [get_ports { rst_n }]

set_property -dict { PACKAGE_PIN A9  IOSTANDARD LVCMOS33 } [get_ports { uart_rx }]
set_property -dict { PACKAGE_PIN D10 IOSTANDARD LVCMOS33 } [get_ports { uart_tx }]

set_property -dict { PACKAGE_PIN H5  IOSTANDARD LVCMOS33 } [get_ports { led0 }]
set_property -dict { PACKAGE_PIN J5  IOSTANDARD LVCMOS33 } [get_ports { led1 }]
