#pragma once
// `lorq sweep`: measured accuracy against budget (app/cmd_sweep.cpp).
namespace lorq::cli {
int cmd_sweep(int argc, char** argv);
}
