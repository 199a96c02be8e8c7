/*
 * Replay driver for fuzz targets in a plain build: runs LLVMFuzzerTestOneInput on every file of the
 * directories (or files) named on the command line, so ctest catches regressions on the corpus
 * without libFuzzer. A crash or sanitizer report fails the test.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { REPLAY_FILE_MAX = 4 << 20 };

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *data;
    size_t n;

    if (f == NULL) {
        perror(path);
        return -1;
    }
    data = malloc(REPLAY_FILE_MAX);
    if (data == NULL)
        abort();
    n = fread(data, 1, REPLAY_FILE_MAX, f);
    fclose(f);
    LLVMFuzzerTestOneInput(data, n);
    free(data);
    return 0;
}

int main(int argc, char **argv)
{
    int files = 0, errors = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        DIR *d;
        struct dirent *e;
        if (stat(argv[i], &st) != 0) {
            perror(argv[i]);
            return 1;
        }
        if (!S_ISDIR(st.st_mode)) {
            errors += replay_file(argv[i]) != 0;
            files++;
            continue;
        }
        if ((d = opendir(argv[i])) == NULL)
            return 1;
        while ((e = readdir(d)) != NULL) {
            char path[4096];
            if (e->d_name[0] == '.')
                continue;
            snprintf(path, sizeof(path), "%s/%s", argv[i], e->d_name);
            errors += replay_file(path) != 0;
            files++;
        }
        closedir(d);
    }
    printf("replayed %d inputs\n%d passed, %d failed\n", files, files - errors, errors);
    return files > 0 && errors == 0 ? 0 : 1;
}
