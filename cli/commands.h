/* The cmamba subcommands; each returns the process exit code. */
#ifndef CM_COMMANDS_H
#define CM_COMMANDS_H

int cmd_generate(int argc, char **argv);
int cmd_forward(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_grad(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_launch(int argc, char **argv);

#endif
