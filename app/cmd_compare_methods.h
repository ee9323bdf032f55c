#pragma once
// `lorq compare-methods`: several compression methods at one weight budget (app/cmd_compare_methods.cpp).
namespace lorq::cli {
int cmd_compare_methods(int argc, char** argv);
}
