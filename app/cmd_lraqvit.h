#pragma once
// `lorq lraqvit`: the LRA-QViT method end to end (app/cmd_lraqvit.cpp).
namespace lorq::cli {
int cmd_lraqvit(int argc, char** argv);
}
